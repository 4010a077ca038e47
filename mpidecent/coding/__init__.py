"""Gradient coding for master/worker training: codes with their decoders, and straggler models
(pure)."""
