#!/usr/bin/env bash
# One idempotent setup step: venv, pinned dependencies, interfaces (CMake/rosidl), wam_ros itself.
# Every step is skipped when its inputs have not changed since it last succeeded, so a second
# run with nothing changed takes seconds. A failure names the step and its log file.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${WAM_ROS_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
BUILD=$ROOT/build/wam_ros_interfaces
LOGS=$ROOT/build/logs
STAMPS=$VENV/.wam_ros_stamps
FIX_INCLUDE_PATHS=$ROOT/wam_ros_interfaces/cmake/wam_ros_fix_foreign_include_paths.cmake
mkdir -p "$LOGS"

step() {  # step <name> <command...>: run quietly, log to build/logs/<name>.log, name the step on failure
  local name=$1; shift
  local started=$SECONDS
  printf '[setup] %-13s ... ' "$name"
  if "$@" >"$LOGS/$name.log" 2>&1; then
    echo "ok ($((SECONDS - started)) s)"
  else
    echo "FAILED"
    echo
    echo "[setup] step '$name' failed; last lines of $LOGS/$name.log:" >&2
    tail -n 25 "$LOGS/$name.log" >&2
    exit 1
  fi
}

fresh() {  # fresh <stamp> <files...>: true when the files' hash equals the stamp's
  local stamp=$STAMPS/$1; shift
  [ -f "$stamp" ] && [ "$(cat "$@" 2>/dev/null | sha256sum)" = "$(cat "$stamp")" ]
}

stamp() {
  local stamp=$STAMPS/$1; shift
  mkdir -p "$STAMPS"
  cat "$@" | sha256sum >"$stamp"
}

system_packages() {
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v g++ >/dev/null || missing+=(g++)
  ldconfig -p | grep -q 'libusb-1.0.so.0' || missing+=(libusb-1.0-0)   # pyrealsense2 needs it to import
  [ ${#missing[@]} -eq 0 ] && { echo "all present"; return 0; }
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}"
    return 1
  fi
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

make_venv() {
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip --version
}

python_packages() {
  "$PY" -m pip install -r requirements.txt -c constraints.txt
  "$PY" -m pip install --no-deps -r requirements-nodeps.txt
  "$PY" -m pip install -r requirements-view.txt -c constraints.txt   # optional extra (wam-ros view); the tests use it
}

purelib() {
  "$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

ament_install() (  # ament_install <package> <source dir> <build dir>: configure, build, install into the venv
  # The three fixes the PyPI ROS 2 wheels need (docs/ARCHITECTURE.md, "Interfaces and their
  # build"): AMENT_PREFIX_PATH at configure time, the venv as prefix and install prefix, and the
  # wheels' foreign include paths rewritten (wam_ros_fix_foreign_include_paths, which the
  # package's CMakeLists.txt includes).
  mkdir -p "$3"
  cd "$3"
  AMENT_PREFIX_PATH=$VENV cmake "$2" -DPython3_EXECUTABLE="$PY" \
    -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" -DBUILD_TESTING=OFF \
    -DWAM_ROS_FIX_FOREIGN_INCLUDE_PATHS="$FIX_INCLUDE_PATHS"
  cmake --build . -j "$(nproc)"
  cmake --install .
  # ament installs egg-info metadata for the generated package; pip would take it for a
  # pip installation and might remove the generated code when resolving.
  rm -rf "$(purelib)/$1"-*.egg-info
)

interfaces() {
  # wam_ros_interfaces is an ament_cmake package of its own; build and install it into the venv.
  ament_install wam_ros_interfaces "$ROOT/wam_ros_interfaces" "$BUILD"
  # Before wam_ros_interfaces existed the generated code was installed as the wam_ros package,
  # which would shadow the checkout's wam_ros: remove it from venvs made then.
  rm -rf "$(purelib)/wam_ros" "$VENV/share/wam_ros"
}

build_tf2_msgs() {
  # /tf and /tf_static carry tf2_msgs/msg/TFMessage, and no wheel ships tf2_msgs. Generate a
  # one-message ament package named tf2_msgs from its documented definition (cmake/tf2_msgs/)
  # under build/, never in the source tree, where colcon could take it for the real one; install
  # it into the venv like our interfaces. Only runs where tf2_msgs is not importable otherwise.
  local src=$ROOT/build/tf2_msgs/src
  rm -rf "$src"
  mkdir -p "$src/msg"
  cp cmake/tf2_msgs/package.xml.in "$src/package.xml"
  cp cmake/tf2_msgs/CMakeLists.txt.in "$src/CMakeLists.txt"
  cp cmake/tf2_msgs/msg/TFMessage.msg "$src/msg/"
  ament_install tf2_msgs "$src" "$ROOT/build/tf2_msgs/build"
}

build_control_msgs() {
  # The bridge commands grippers through control_msgs/action/GripperCommand (franka_gripper,
  # ros2_controllers' gripper_action_controller), and no wheel ships control_msgs. Built like
  # tf2_msgs above: GripperCommand.msg and GripperCommand.action from their documented
  # definitions (cmake/control_msgs/), under build/, only where control_msgs is not importable.
  local src=$ROOT/build/control_msgs/src
  rm -rf "$src"
  mkdir -p "$src/msg" "$src/action"
  cp cmake/control_msgs/package.xml.in "$src/package.xml"
  cp cmake/control_msgs/CMakeLists.txt.in "$src/CMakeLists.txt"
  cp cmake/control_msgs/msg/GripperCommand.msg "$src/msg/"
  cp cmake/control_msgs/action/GripperCommand.action "$src/action/"
  ament_install control_msgs "$src" "$ROOT/build/control_msgs/build"
}

install_wam_ros() {
  "$PY" -m pip install --no-deps --no-build-isolation -e "$ROOT" --config-settings editable_mode=compat
}

check() (
  cd /tmp && "$PY" -c 'from wam_ros_interfaces.msg import ActionChunk; from wam_ros_interfaces.srv import SetMode; from wam_ros_interfaces.action import ExecuteTask; from tf2_msgs.msg import TFMessage; from control_msgs.action import GripperCommand; import wam_ros.bringup; print("interfaces, tf2_msgs, control_msgs and wam_ros import")'
)

importable() (  # importable <module>: true when the venv imports it (outside the checkout)
  cd /tmp && "$PY" -c "import $1" >/dev/null 2>&1
)

step system-deps system_packages
step venv make_venv
if fresh requirements requirements.txt requirements-nodeps.txt requirements-view.txt constraints.txt; then
  echo "[setup] dependencies  ... up to date"
else
  step dependencies python_packages
  stamp requirements requirements.txt requirements-nodeps.txt requirements-view.txt constraints.txt
fi
INTERFACE_FILES=(wam_ros_interfaces/CMakeLists.txt wam_ros_interfaces/cmake/*.cmake wam_ros_interfaces/package.xml wam_ros_interfaces/msg/*.msg wam_ros_interfaces/srv/*.srv wam_ros_interfaces/action/*.action)
if fresh interfaces "${INTERFACE_FILES[@]}" && importable "wam_ros_interfaces.msg, wam_ros_interfaces.srv, wam_ros_interfaces.action"; then
  echo "[setup] interfaces    ... up to date"
else
  step interfaces interfaces
  stamp interfaces "${INTERFACE_FILES[@]}"
fi
TF2_MSGS_FILES=(cmake/tf2_msgs/*.in cmake/tf2_msgs/msg/*.msg wam_ros_interfaces/cmake/*.cmake)
if [ ! -f "$STAMPS/tf2_msgs" ] && importable tf2_msgs.msg; then
  echo "[setup] tf2_msgs      ... installed (not built here)"
elif fresh tf2_msgs "${TF2_MSGS_FILES[@]}" && importable tf2_msgs.msg; then
  echo "[setup] tf2_msgs      ... up to date"
else
  step tf2_msgs build_tf2_msgs
  stamp tf2_msgs "${TF2_MSGS_FILES[@]}"
fi
CONTROL_MSGS_FILES=(cmake/control_msgs/*.in cmake/control_msgs/msg/*.msg cmake/control_msgs/action/*.action wam_ros_interfaces/cmake/*.cmake)
if [ ! -f "$STAMPS/control_msgs" ] && importable control_msgs.action; then
  echo "[setup] control_msgs  ... installed (not built here)"
elif fresh control_msgs "${CONTROL_MSGS_FILES[@]}" && importable control_msgs.action; then
  echo "[setup] control_msgs  ... up to date"
else
  step control_msgs build_control_msgs
  stamp control_msgs "${CONTROL_MSGS_FILES[@]}"
fi
if fresh wam_ros setup.py; then
  echo "[setup] wam_ros       ... up to date"
else
  step wam_ros install_wam_ros
  stamp wam_ros setup.py
fi
step check check
