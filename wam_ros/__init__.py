"""wam_ros: World Action Models driving robot arms through ROS 2.

The generated interfaces (``wam_ros.msg``, ``wam_ros.srv``, ``wam_ros.action``) and this
source tree form one Python package. In a development checkout the two live in different
directories (the interfaces are built into the virtual environment), so the package path is
extended to every ``wam_ros`` directory on ``sys.path``.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
