"""Thin platform adapters over the shared core (`regwarden`); one package per platform."""
