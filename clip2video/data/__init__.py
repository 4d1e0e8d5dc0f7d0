"""clip2video.data."""
