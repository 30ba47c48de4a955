-- Direct (presigned multipart) uploads in progress; one per repository and digest, so a
-- client that starts again resumes the same upload.
CREATE TABLE "UploadSession" (
    "id" UUID NOT NULL,
    "repositoryId" UUID NOT NULL,
    "digest" TEXT NOT NULL,
    "size" BIGINT NOT NULL,
    "key" TEXT NOT NULL,
    "uploadId" TEXT NOT NULL,
    "partSize" INTEGER NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "createdById" UUID,

    CONSTRAINT "UploadSession_pkey" PRIMARY KEY ("id")
);

CREATE UNIQUE INDEX "UploadSession_repositoryId_digest_key" ON "UploadSession"("repositoryId", "digest");
CREATE INDEX "UploadSession_createdAt_idx" ON "UploadSession"("createdAt");

ALTER TABLE "UploadSession" ADD CONSTRAINT "UploadSession_repositoryId_fkey" FOREIGN KEY ("repositoryId") REFERENCES "Repository"("id") ON DELETE CASCADE ON UPDATE CASCADE;
