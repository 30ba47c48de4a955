-- A running job's checkpoints: files by blob digest (counted in Blob.refCount), so a retry
-- on another machine can resume; released when the job ends.
CREATE TABLE "JobCheckpoint" (
    "jobId" UUID NOT NULL,
    "step" INTEGER NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "attempt" INTEGER NOT NULL DEFAULT 0,
    "metadata" JSONB NOT NULL DEFAULT '{}',

    CONSTRAINT "JobCheckpoint_pkey" PRIMARY KEY ("jobId","step")
);

CREATE TABLE "JobCheckpointFile" (
    "jobId" UUID NOT NULL,
    "step" INTEGER NOT NULL,
    "path" TEXT NOT NULL,
    "blobDigest" TEXT NOT NULL,
    "size" BIGINT NOT NULL,

    CONSTRAINT "JobCheckpointFile_pkey" PRIMARY KEY ("jobId","step","path")
);

CREATE INDEX "JobCheckpointFile_blobDigest_idx" ON "JobCheckpointFile"("blobDigest");

ALTER TABLE "JobCheckpoint" ADD CONSTRAINT "JobCheckpoint_jobId_fkey" FOREIGN KEY ("jobId") REFERENCES "Job"("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "JobCheckpointFile" ADD CONSTRAINT "JobCheckpointFile_jobId_step_fkey" FOREIGN KEY ("jobId", "step") REFERENCES "JobCheckpoint"("jobId", "step") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "JobCheckpointFile" ADD CONSTRAINT "JobCheckpointFile_blobDigest_fkey" FOREIGN KEY ("blobDigest") REFERENCES "Blob"("digest") ON DELETE RESTRICT ON UPDATE CASCADE;
