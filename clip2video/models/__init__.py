"""clip2video.models: the model registry (meanp, seqtransf, tdb, tab, clip2video) and checkpoints.

```python
model = create_model("clip2video", clip="ViT-B-32", clip_weights="ViT-B-32.pt")
model = from_official_checkpoint("pytorch_model.bin.2", variant="clip2video", center_weight=0.5)
sim = model.similarity(model.encode_text(ids, mask), model.encode_video(frames, video_mask))
```
"""

from __future__ import annotations

from clip2video.models.backbone import build_clip, infer_clip_config
from clip2video.models.official import from_official_checkpoint
from clip2video.models.registry import create_model, is_model, list_models, register_model
from clip2video.models.retrieval import RetrievalModel

__all__ = [
    "RetrievalModel",
    "build_clip",
    "create_model",
    "from_official_checkpoint",
    "infer_clip_config",
    "is_model",
    "list_models",
    "register_model",
]
