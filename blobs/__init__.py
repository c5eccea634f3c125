"""Blob stores: where attachments' (encrypted) bytes live. ``base.BlobStore`` is the interface;
``local.LocalBlobStore`` keeps files on local disk behind gateway URLs signed with an HMAC key
(embedded mode), ``s3.S3BlobStore`` an S3 bucket behind presigned URLs (production; tested
against SeaweedFS). ``factory.create_blob_store`` picks one from configuration."""
