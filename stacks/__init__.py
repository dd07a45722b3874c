"""The AWS CDK app's stack and constructs. Only ``app.py`` reads the ``cdk.json`` context (see :mod:`stacks.config`)."""
