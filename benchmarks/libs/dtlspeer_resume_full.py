"""Baseline of the ``resume`` metric: the same ``DTLSHost`` server and
Godot-style clients as ``dtlspeer_resume``, doing full ECDHE-ECDSA
handshakes (no session offered)."""

from __future__ import annotations

from . import dtlspeer_dtls, dtlspeer_resume

resume_server = dtlspeer_resume.resume_server
resume_client = dtlspeer_dtls.handshake_client
