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

from wam_ros.data.bags import BagError, BagReader, BagRecording, BagWriter, EpisodeLabels, read_labels, write_labels
from wam_ros.data.convert import ConvertError, bag_to_episode, convert_bags, robot_dataset_info

__all__ = ["ACTION", "STATE", "DatasetError", "DatasetInfo", "DatasetWriter", "Episode", "EpisodeDataset", "SubtaskSpan",
           "BagError", "BagReader", "BagRecording", "BagWriter", "EpisodeLabels", "read_labels", "write_labels",
           "ConvertError", "bag_to_episode", "convert_bags", "robot_dataset_info"]
