"""clip2video-bench: reproduce and extend CLIP2Video for text-video retrieval."""

__version__ = "0.1.0"
