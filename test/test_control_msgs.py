"""control_msgs GripperCommand as this machine has it: the stand-in scripts/setup.sh builds from
cmake/control_msgs/ where no control_msgs is importable, or a ROS install's own package.

The type hash (RIHS01) is what ROS 2 compares between peers (rmw_zenoh keys topics by it), so
ours must be the real package's: the message's equals the hash in a real control_msgs build's
generated code; the action's types, which a Kilted rosidl derives from the same definitions, are
computed again by rosbags' independent implementation of REP-2011 and pinned, so a change to the
templates that alters them fails here.
"""
from __future__ import annotations

import json
from pathlib import Path

import control_msgs
import pytest
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

#: control_msgs/msg/GripperCommand in rosidl_generator_c's gripper_command__description.c of a real
#: control_msgs build (found with the project's code search, 2026-12-08; docs/real_robot.md).
REAL_MESSAGE_HASH = "RIHS01_57eb8f326c9889ca8bb34ead82cc94cc09bf6bc5c3b6c09546dca3a00b589890"
#: What Kilted's rosidl 4.9.5 generates for the action from the documented definition.
ACTION_HASHES = {
    "control_msgs/action/GripperCommand": "RIHS01_e17c0e644eccf14bea84a0a93e0977182872c2eb7873ca6694900059b46dbc84",
    "control_msgs/action/GripperCommand_Goal": "RIHS01_607d9f41eb241e1922e90f02125e87ae6bfb78f7f64a71dc92630263d01f8b6d",
    "control_msgs/action/GripperCommand_Result": "RIHS01_bf512d5aa6a0e4fe4d8be22b2ec4a1973c3d250fa1f65e47450322c25c45c0a0",
    "control_msgs/action/GripperCommand_Feedback": "RIHS01_8f7c520077bab528bb9161ee3b83c81eee1f8aecadb8922ce82c79d667a819c4",
    "control_msgs/action/GripperCommand_FeedbackMessage": "RIHS01_392ff03fcd872f9dc2405cbeb2897fcf011ad9998458b6aa85c603b8a49e431d",
    "control_msgs/action/GripperCommand_SendGoal": "RIHS01_6bf8cc4ce80cd499e7dd3258c03c50c3fa6672b469ff8355339ef1df77fcd212",
    "control_msgs/action/GripperCommand_GetResult": "RIHS01_7e60a7606063d4a2728d21badac099e68b734a196ac3ab42d1d4c668eb0bb3cd",
}
RESULT_FIELDS = "float64 position\nfloat64 effort\nbool stalled\nbool reached_goal"


def installed_hashes(kind: str) -> dict[str, str]:
    """Type name -> RIHS01 hash from the package's installed type description (share/control_msgs/<kind>/)."""
    prefix = Path(control_msgs.__file__).resolve().parents[4]  # <prefix>/lib/pythonX.Y/site-packages/control_msgs
    description = json.loads((prefix / "share" / "control_msgs" / kind / "GripperCommand.json").read_text())
    return {entry["type_name"]: entry["hash_string"] for entry in description["type_hashes"]}


def test_the_message_hash_is_the_real_control_msgs_one():
    assert installed_hashes("msg")["control_msgs/msg/GripperCommand"] == REAL_MESSAGE_HASH


def test_the_action_hashes_agree_with_rosbags_and_are_stable():
    installed = installed_hashes("action")
    assert {name: installed[name] for name in ACTION_HASHES} == ACTION_HASHES
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    types.update(get_types_from_msg("float64 position\nfloat64 max_effort", "control_msgs/msg/GripperCommand"))
    types.update(get_types_from_msg("control_msgs/msg/GripperCommand command", "control_msgs/action/GripperCommand_Goal"))
    types.update(get_types_from_msg(RESULT_FIELDS, "control_msgs/action/GripperCommand_Result"))
    types.update(get_types_from_msg(RESULT_FIELDS, "control_msgs/action/GripperCommand_Feedback"))
    types.update(get_types_from_msg("unique_identifier_msgs/UUID goal_id\ncontrol_msgs/action/GripperCommand_Feedback feedback",
                                    "control_msgs/action/GripperCommand_FeedbackMessage"))
    store.register(types)
    assert store.hash_rihs01("control_msgs/msg/GripperCommand") == REAL_MESSAGE_HASH
    for name in types:
        assert store.hash_rihs01(name) == installed[name], name


@pytest.mark.parametrize(("kind", "fields"), [
    ("Goal", {"command": "control_msgs/GripperCommand"}),
    ("Result", {"position": "double", "effort": "double", "stalled": "boolean", "reached_goal": "boolean"}),
    ("Feedback", {"position": "double", "effort": "double", "stalled": "boolean", "reached_goal": "boolean"}),
])
def test_the_python_types_have_the_documented_fields(kind, fields):
    from control_msgs.action import GripperCommand
    from control_msgs.msg import GripperCommand as Command

    assert getattr(GripperCommand, kind).get_fields_and_field_types() == fields
    assert Command.get_fields_and_field_types() == {"position": "double", "max_effort": "double"}
