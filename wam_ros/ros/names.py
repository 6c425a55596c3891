"""Names of the topics and services that several nodes share, relative so that a stack runs in a
namespace (``namespace:=left`` puts them under ``/left``). No rclpy import: light to import."""

JOINT_STATES_TOPIC = "joint_states"
ACTION_CHUNK_TOPIC = "wam/action_chunk"
TELEOP_TWIST_TOPIC = "wam/teleop/command"
TELEOP_JOINT_TOPIC = "wam/teleop/joint_command"
TELEOP_GRIPPER_TOPIC = "wam/teleop/gripper"
ESTOP_TOPIC = "wam/safety/estop"
SAFETY_STATUS_TOPIC = "wam/safety/status"
SET_MODE_SERVICE = "wam/set_mode"
TASK_STATUS_TOPIC = "wam/sim/task_status"
SUBTASK_TOPIC = "wam/task/subtask"
