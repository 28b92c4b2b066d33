"""Using a trained model after training: the encoder API (encoder.py) and phrase-grounding maps (grounding.py)."""
