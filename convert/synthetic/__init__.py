"""The demo-model lab: synthetic checkpoints, nameplate photos, the demo model's training and release."""
