# The two commands of the README: `make demo` (main job) and `make test` (the tests).
# Both run `make setup` first, which is idempotent and takes seconds when nothing changed.
VENV ?= .venv
PY := $(VENV)/bin/python
export ROS_LOG_DIR ?= $(CURDIR)/build/ros_logs
export HOME ?= $(CURDIR)

.PHONY: setup test demo bench clean
setup:
	@scripts/setup.sh

test: setup
	$(PY) -m pytest test

demo: setup
	$(VENV)/bin/wam-ros demo

bench: setup
	@for b in bench/*.py; do echo "== $$b --quick"; $(PY) $$b --quick || exit 1; done

clean:
	rm -rf build $(VENV)
