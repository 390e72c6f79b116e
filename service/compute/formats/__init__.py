"""The response formats of a computed request (service/compute/formats/result.py): JSON (the default),
safetensors, NDJSON streamed layer by layer. wire.py turns tensors into the little-endian arrays that binary
formats carry; safetensors_file.py writes a safetensors file from such arrays."""
