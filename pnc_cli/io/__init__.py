"""Layer io: pnc files (safetensors, model, delta, cloned, local-model-set and search files) and data
sources."""
