"""Frontends: model formats in, tritc.ir.Graph out."""
