"""An S3-compatible object store on loopback (moto's server), as a deployment's storage."""

from __future__ import annotations

from support.loopback import unused_port


class MotoS3:
    """A moto S3 server on 127.0.0.1 for one bucket; ``stop`` then ``start`` again keeps its port.

    Every moto server of the test process shares one in-process backend, which also keeps the objects
    across a restart: a bucket name of the test's own keeps tests from seeing each other's objects.
    """

    CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    REGION = "us-east-1"

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.port = unused_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> MotoS3:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.REGION,
            aws_access_key_id=self.CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self) -> None:
        self.client().create_bucket(Bucket=self.bucket)

    def settings(self) -> dict[str, str]:
        """The environment that points the service's S3 storage at this server."""
        return {
            **self.CREDENTIALS,
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": self.bucket,
            "S3_ENDPOINT_URL": self.endpoint,
            "S3_REGION": self.REGION,
        }

    def key_of(self, output_url: str) -> str:
        """The object key an output URL names; fails if the URL is not one of this bucket's."""
        prefix = f"{self.endpoint}/{self.bucket}/"
        assert output_url.startswith(prefix), output_url
        return output_url[len(prefix) :]
