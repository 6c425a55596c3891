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

interfaces() (  # a subshell: the cd stays inside
  # wam_ros_interfaces is an ament_cmake package of its own; build and install it into the venv.
  # The three fixes the PyPI ROS 2 wheels need (docs/ARCHITECTURE.md, "Interfaces and their
  # build"): AMENT_PREFIX_PATH at configure time, the venv as prefix and install prefix, and the
  # wheels' foreign include paths rewritten (done in wam_ros_interfaces/CMakeLists.txt).
  mkdir -p "$BUILD"
  cd "$BUILD"
  AMENT_PREFIX_PATH=$VENV cmake "$ROOT/wam_ros_interfaces" -DPython3_EXECUTABLE="$PY" \
    -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" -DBUILD_TESTING=OFF
  cmake --build . -j "$(nproc)"
  cmake --install .
  # ament installs egg-info metadata for the generated package; pip would take it for a
  # pip installation and might remove the generated code when resolving.
  local purelib
  purelib=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  rm -rf "$purelib"/wam_ros_interfaces-*.egg-info
  # Before wam_ros_interfaces existed the generated code was installed as the wam_ros package,
  # which would shadow the checkout's wam_ros: remove it from venvs made then.
  rm -rf "$purelib/wam_ros" "$VENV/share/wam_ros"
)

install_wam_ros() {
  "$PY" -m pip install --no-deps --no-build-isolation -e "$ROOT" --config-settings editable_mode=compat
}

check() (
  cd /tmp && "$PY" -c 'from wam_ros_interfaces.msg import ActionChunk; from wam_ros_interfaces.srv import SetMode; from wam_ros_interfaces.action import ExecuteTask; import wam_ros.bringup; print("interfaces and wam_ros import")'
)

step system-deps system_packages
step venv make_venv
if fresh requirements requirements.txt requirements-nodeps.txt requirements-view.txt constraints.txt; then
  echo "[setup] dependencies  ... up to date"
else
  step dependencies python_packages
  stamp requirements requirements.txt requirements-nodeps.txt requirements-view.txt constraints.txt
fi
INTERFACE_FILES=(wam_ros_interfaces/CMakeLists.txt wam_ros_interfaces/package.xml wam_ros_interfaces/msg/*.msg wam_ros_interfaces/srv/*.srv wam_ros_interfaces/action/*.action)
if fresh interfaces "${INTERFACE_FILES[@]}" && check >/dev/null 2>&1; then
  echo "[setup] interfaces    ... up to date"
else
  step interfaces interfaces
  stamp interfaces "${INTERFACE_FILES[@]}"
fi
if fresh wam_ros setup.py; then
  echo "[setup] wam_ros       ... up to date"
else
  step wam_ros install_wam_ros
  stamp wam_ros setup.py
fi
step check check
