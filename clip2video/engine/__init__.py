"""clip2video.engine."""
