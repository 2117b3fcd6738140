"""What a request produces, and so what it is billed by: tokens, images or video seconds."""

from __future__ import annotations

from django.db import models


class Modality(models.TextChoices):
    CHAT = "chat"
    IMAGE = "image"
    VIDEO = "video"
