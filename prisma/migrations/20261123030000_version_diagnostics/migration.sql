-- Diagnostics computed after each commit (spectra, effective rank, norms), one row per version.
CREATE TABLE "VersionDiagnostics" (
    "versionId" UUID NOT NULL,
    "computedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "data" JSONB NOT NULL,

    CONSTRAINT "VersionDiagnostics_pkey" PRIMARY KEY ("versionId")
);

ALTER TABLE "VersionDiagnostics" ADD CONSTRAINT "VersionDiagnostics_versionId_fkey" FOREIGN KEY ("versionId") REFERENCES "Version"("id") ON DELETE CASCADE ON UPDATE CASCADE;
