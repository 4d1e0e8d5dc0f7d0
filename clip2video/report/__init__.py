"""clip2video.report."""
