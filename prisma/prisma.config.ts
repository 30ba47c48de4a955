// Prisma 7 CLI configuration: where the schema and migrations are. The CLI is used only
// for `prisma generate` here (see prisma/README.md).
import { defineConfig } from 'prisma/config';

export default defineConfig({
  schema: 'schema.prisma',
  migrations: { path: 'migrations' },
});
