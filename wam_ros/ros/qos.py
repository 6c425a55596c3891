"""QoS profiles chosen on purpose, one per kind of traffic."""
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

#: Commands and action chunks: every message matters, only the newest few are useful.
COMMANDS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)

#: Status that a late joiner must see at once (mode, plan): reliable and latched.
LATCHED = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)

#: The sim's task status, for late joiners and recorders. Latched like LATCHED, but the writer
#: keeps 2 s of history at 5 Hz: with a history of one, a reliable writer overwrites a sample a
#: CPU-starved reader has not taken yet and the reader reports it lost (seen once in CI: a
#: recorded bag missing one task status). Readers that want only the newest keep subscribing
#: with LATCHED; a late joiner gets the last samples in order.
STATUS = QoSProfile(
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)

#: High-rate sensor streams (joint states, images). Reliable on purpose: with Fast DDS'
#: default transports best-effort images arrive split or not at all, and the loopback + shared
#: memory profile makes reliable delivery cheap. Depth small so a slow reader sees fresh data.
SENSORS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)

#: The safety bridge's safety inputs (joint states, the ESTOP topic). A best-effort reader
#: matches best-effort and reliable writers alike; a reliable reader never hears a best-effort
#: writer (many robot drivers and e-stop button nodes publish best effort), and the bridge would
#: sit on a stale state. The ESTOP topic also gets a reliable reader (a reliable writer's ESTOP
#: is then delivered reliably; the duplicate is harmless).
SAFETY_INPUTS = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)

#: Every other reader of a robot driver's /joint_states (inference, teleop, robot_state): best
#: effort for the same reason, so a best-effort driver is heard by every node, not the bridge alone.
JOINT_STATES_IN = SAFETY_INPUTS
