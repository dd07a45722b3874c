"""Job backends: each only submits, describes and cancels. See :mod:`scaler_aws_batch.backends.base`."""
