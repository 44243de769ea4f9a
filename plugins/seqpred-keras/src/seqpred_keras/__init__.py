"""Keras 3 backend for seqpred. Importing this package imports neither keras nor tensorflow."""
