"""The bucket that carries payloads too big for a job parameter, and every result, under one key prefix."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

#: Failed multipart uploads (a worker killed mid-upload) are cleaned up after this many days.
ABORT_INCOMPLETE_UPLOAD_DAYS = 1


class TaskBucket(Construct):
    """A private, TLS-only, SSE-S3 encrypted bucket whose objects under ``prefix`` expire after ``retention_days``.

    SSE-S3 rather than SSE-KMS: the objects are short-lived task payloads and results; SSE-S3 costs nothing, adds no
    per-request KMS call (and no KMS throttling at high job rates) and needs no key grants for the job role and the
    adapter policy.
    """

    bucket: s3.Bucket
    prefix: str

    def __init__(
        self, scope: Construct, construct_id: str, *, prefix: str, retention_days: int, destroy_on_delete: bool
    ) -> None:
        super().__init__(scope, construct_id)
        self.prefix = prefix
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=False,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireTaskObjects",
                    prefix=prefix,
                    expiration=Duration.days(retention_days),
                    abort_incomplete_multipart_upload_after=Duration.days(ABORT_INCOMPLETE_UPLOAD_DAYS),
                ),
                s3.LifecycleRule(
                    id="AbortIncompleteUploads",
                    abort_incomplete_multipart_upload_after=Duration.days(ABORT_INCOMPLETE_UPLOAD_DAYS),
                ),
            ],
            removal_policy=RemovalPolicy.DESTROY if destroy_on_delete else RemovalPolicy.RETAIN,
            # Empties the bucket on `cdk destroy` (a Lambda-backed custom resource) so the stack leaves nothing behind.
            auto_delete_objects=destroy_on_delete,
        )
