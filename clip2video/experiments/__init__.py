"""clip2video.experiments."""
