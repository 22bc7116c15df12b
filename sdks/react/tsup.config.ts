import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'src/index.tsx' },
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  target: 'es2019',
  sourcemap: true,
  external: ['react', '@gamify/core'],
});
