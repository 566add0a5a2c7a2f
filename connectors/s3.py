"""S3 connector (boto3): any S3-compatible endpoint, bucket + prefix + globs.

Credentials come from the standard AWS chain (environment, ``profile``, shared config, instance role);
ragops never stores them. Throttling and 5xx responses are retried by botocore's "standard" retry mode
with exponential backoff (``max_attempts``). Listing pages through ListObjectsV2; the ETag in the
listing is the change signal (LastModified moves on identical re-uploads, so it is not used).
"""

from __future__ import annotations

import hashlib
import logging
import re
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Iterator

from connectors.globs import selected
from connectors.ids import document_id
from rag.config import S3Source
from rag.errors import DocumentError, SourceError
from rag.models import DocumentRef
from rag.secrets import redact_url

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

#: a file type worth keeping on a fetched file's name (parsers dispatch on it): a dot and 1-10 letters/digits
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
}


def s3_client(source: S3Source) -> S3Client:
    """A boto3 S3 client for the source's endpoint, region and profile, with retries and timeouts.

    Raises:
        SourceError: the named profile does not exist.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ProfileNotFound

    try:
        session = boto3.Session(profile_name=source.profile)
    except ProfileNotFound:
        raise SourceError(f"AWS profile {source.profile!r} for source {source.name!r} is not in ~/.aws/config") from None
    config = Config(
        retries={"total_max_attempts": source.max_attempts, "mode": "standard"},
        connect_timeout=10,
        read_timeout=source.read_timeout,
    )
    return session.client("s3", endpoint_url=source.endpoint_url, region_name=source.region, config=config)


def list_s3(source: S3Source, client: S3Client | None = None, *, page_size: int = 1000) -> Iterator[DocumentRef]:
    """Yield every object under the source's prefix that matches its globs, in key order.

    Raises:
        SourceError: the listing failed at any page (credentials, bucket, endpoint): a partial listing is
            never returned, so deletions are never inferred from one.
    """
    client = client or s3_client(source)
    prefix = source.prefix
    refs = []
    with _translate(source, "listing"):
        paginator = client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=source.bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size})
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/"):  # "folder" placeholder objects
                    continue
                relative = key[len(prefix) :].lstrip("/") if prefix else key
                if not selected(relative, source.include, source.exclude):
                    continue
                refs.append(
                    DocumentRef(
                        doc_id=document_id(source.name, relative),
                        source=source.name,
                        uri=f"s3://{source.bucket}/{key}",
                        size=int(obj["Size"]),
                        modified=obj["LastModified"].timestamp(),
                        signal="etag:" + obj["ETag"].strip('"'),
                    )
                )
    yield from sorted(refs, key=lambda ref: ref.doc_id)


def fetch_s3(source: S3Source, ref: DocumentRef, folder: Path, client: S3Client | None = None) -> Path:
    """Stream one object to a file in ``folder`` (boto3's transfer manager: multipart, retried).

    Raises:
        DocumentError: the object could not be downloaded (gone since the listing, denied, network).
    """
    client = client or s3_client(source)
    key = ref.uri[len(f"s3://{source.bucket}/") :]
    target = folder / local_name(key)
    try:
        client.download_file(source.bucket, key, str(target))
    except Exception as exc:  # botocore raises many types; all mean "this object, now"
        raise DocumentError("fetch", f"cannot download {ref.uri}: {_describe(exc)}") from None
    return target


def local_name(key: str) -> str:
    """The file name an object is fetched to: a hash of its key plus the key's file type, so that no key
    (``..``, ``/``-only, absolute-looking, 1,000 characters, control characters) can name a path outside
    the fetch folder, be too long for the filesystem, or collide with another key's file."""
    suffix = PurePosixPath(key).suffix
    if not _SUFFIX.fullmatch(suffix):
        suffix = ""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32] + suffix.lower()


@contextmanager
def _translate(source: S3Source, action: str) -> Iterator[None]:
    """botocore errors -> SourceError naming the source, with a next step."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    endpoint = f", {redact_url(source.endpoint_url)}" if source.endpoint_url else ""
    where = f"S3 source {source.name!r} ({source.url}{endpoint})"
    try:
        yield
    except NoCredentialsError:
        raise SourceError(
            f"{action} {where}: no AWS credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "a profile, or an instance role"
        ) from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _AUTH_CODES or status == 403:
            raise SourceError(
                f"{action} {where}: the credentials were refused ({code}); check AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY or the profile, and the bucket policy"
            ) from None
        if code == "NoSuchBucket":
            raise SourceError(f"{action} {where}: bucket {source.bucket!r} does not exist") from None
        # Throttling and 5xx were already retried by botocore; still worth a later retry.
        raise SourceError(f"{action} {where} failed: {_describe(exc)}", transient=status >= 500 or status == 429) from None
    except BotoCoreError as exc:
        raise SourceError(f"{action} {where} failed: {_describe(exc)}", transient=True) from None


def _describe(exc: BaseException) -> str:
    # botocore quotes the endpoint URL it failed to reach, credentials included.
    return (redact_url(" ".join(str(exc).split())) or type(exc).__name__)[:300]
