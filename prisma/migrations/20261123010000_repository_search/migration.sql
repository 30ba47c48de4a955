-- Full-text search over repositories: name and namespace weigh most, then base model and
-- task tags, then the description. The 'simple' configuration (no stemming) keeps model
-- names and tags matching as written. Generated, so it can never be stale.

-- array_to_string is only STABLE in general; for text[] it is immutable, which a
-- generated column requires.
CREATE FUNCTION "lowrank_tags_text"(tags text[]) RETURNS text
  LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT array_to_string(tags, ' ') $$;

ALTER TABLE "Repository" ADD COLUMN "search" tsvector GENERATED ALWAYS AS (
  setweight(to_tsvector('simple'::regconfig, "namespace" || ' ' || "name"), 'A') ||
  setweight(to_tsvector('simple'::regconfig, "baseModel" || ' ' || "lowrank_tags_text"("taskTags")), 'B') ||
  setweight(to_tsvector('simple'::regconfig, "description"), 'C')
) STORED;

CREATE INDEX "Repository_search_idx" ON "Repository" USING GIN ("search");
