"""pip path for wam_ros: installs the Python package and the ``wam-ros`` command.

The interfaces (the wam_ros_interfaces package) are built by CMake (``make setup`` does both); on a
ROS 2 install ``colcon build`` uses CMakeLists.txt and package.xml instead of this file.
"""
from setuptools import find_packages, setup

setup(
    name="wam_ros",
    version="0.2.0",
    description="World Action Models driving robot arms through ROS 2, safely, with the data loop closed.",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["wam_ros", "wam_ros.*"]),
    package_data={"wam_ros": ["py.typed"]},
    entry_points={"console_scripts": ["wam-ros = wam_ros.cli:main"]},
)
