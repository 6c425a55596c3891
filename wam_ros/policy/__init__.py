"""Remote policies over openpi's websocket protocol (no rclpy): the msgpack + numpy codec, the
client, the server, and the per-policy mapping between our robot and a server's keys and actions.

Protocol and mapping YAML: docs/remote_policy.md.
"""
