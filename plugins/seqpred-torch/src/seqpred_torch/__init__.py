"""PyTorch backend for seqpred. Importing this package does not import torch."""
