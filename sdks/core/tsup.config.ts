import { defineConfig } from 'tsup';

export default defineConfig([
  {
    entry: { index: 'src/index.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    clean: true,
    target: 'es2019',
    sourcemap: true,
  },
  {
    // <script src="gamify.min.js"> → window.Gamify
    entry: { 'gamify.min': 'src/global.ts' },
    format: ['iife'],
    minify: true,
    target: 'es2017',
    outExtension: () => ({ js: '.js' }),
    sourcemap: false,
  },
]);
