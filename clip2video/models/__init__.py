"""clip2video.models."""
