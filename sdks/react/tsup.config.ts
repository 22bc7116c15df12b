import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'src/index.tsx' },
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  target: 'es2019',
  sourcemap: true,
  external: ['react', '@gamify/core'],
  // @gamify/core's own declarations, not a copy: a copied class would not accept the user's Gamify.
  tsconfig: 'tsconfig.build.json',
});
