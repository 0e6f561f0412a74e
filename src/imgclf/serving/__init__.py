"""Using a trained model: loading a checkpoint or its ONNX export, batch prediction, and the
HTTP service."""
