/** The services a test needs, from the env that `npm test` loads; a clear failure otherwise. */
export function serviceEnv(name: 'DATABASE_URL' | 'REDIS_URL' | 'S3_ENDPOINT' | 'S3_ACCESS_KEY_ID' | 'S3_SECRET_ACCESS_KEY'): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with \`npm test\`, which starts PostgreSQL, Redis and MinIO`);
  return value;
}
