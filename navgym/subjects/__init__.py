"""Subjects: anatomies with ground truth (see :class:`Subject`)."""

from .subject import Subject, identity_transform, template_subject

__all__ = ["Subject", "identity_transform", "template_subject"]
