"""Serving the world action model on a robot (no rclpy import): observation assembly, chunk continuity."""
