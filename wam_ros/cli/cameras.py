"""``wam-ros cameras list | check --robot R | record --serial S PATH``: the real cameras without ROS.

``check`` exits 1 when a camera cannot be opened or delivers below 80 % of its rate; ``record``
writes a librealsense recording that the camera node replays with ``playback_file``.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="camera_command", required=True, metavar="{list,check,record}")
    commands.add_parser("list", help="list RealSense devices and USB video devices")
    checker = commands.add_parser("check", help="open every camera of a robot config and measure it",
                                  formatter_class=parser.formatter_class)
    checker.add_argument("--robot", required=True, help="robot name under config/robots/ or a YAML path")
    checker.add_argument("--seconds", type=float, default=3.0, help="how long to read each camera")
    recorder = commands.add_parser("record", help="record one RealSense (colour + depth) to a .db3 file",
                                   formatter_class=parser.formatter_class)
    recorder.add_argument("path", help="the .db3 file to write")
    recorder.add_argument("--serial", required=True, help="the RealSense's serial number (wam-ros cameras list)")
    recorder.add_argument("--seconds", type=float, default=10.0, help="recording length")
    recorder.add_argument("--width", type=int, default=640, help="image width [px]")
    recorder.add_argument("--height", type=int, default=480, help="image height [px]")
    recorder.add_argument("--rate-hz", type=int, default=30, help="frame rate [Hz]")


def run(args: argparse.Namespace) -> int:
    from wam_ros.cameras.check import check, list_cameras, record

    if args.camera_command == "list":
        return list_cameras()
    if args.camera_command == "check":
        return check(args.robot, args.seconds)
    return record(args.serial, args.seconds, args.path, args.width, args.height, args.rate_hz)
