"""Camera ingestion without ROS: RealSense and OpenCV sources, device-to-host time mapping,
stream health for diagnostics, and approximate synchronisation of several cameras."""
