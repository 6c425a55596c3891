"""Episode datasets and their conversion from rosbags (no rclpy import)."""
from wam_ros.data.episodes import (
    ACTION,
    STATE,
    DatasetError,
    DatasetInfo,
    DatasetWriter,
    Episode,
    EpisodeDataset,
    SubtaskSpan,
)

__all__ = ["ACTION", "STATE", "DatasetError", "DatasetInfo", "DatasetWriter", "Episode", "EpisodeDataset", "SubtaskSpan"]
