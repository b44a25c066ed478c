"""
twistd dropin for phantom-frame: C{twistd -n phantom-frame --config FILE}.
"""

from twisted.application.service import ServiceMaker

phantomFrame = ServiceMaker(
    "phantom-frame",
    "phantom_frame.tap",
    "A prerendering, caching reverse proxy.",
    "phantom-frame",
)
