import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const here = (path: string): string => fileURLToPath(new URL(path, import.meta.url));

// GAMIFY_REACT=18 runs the React tests against React 18 (fixtures/react18) instead of the React 19
// installed at the root: `react` and `react-dom` resolve there, and react-dom 18's own
// `require('react')` finds the React 18 next to it.
const react18 = process.env.GAMIFY_REACT === '18';

export default defineConfig({
  resolve: {
    alias: [
      { find: '@gamify/core', replacement: here('./core/src/index.ts') },
      ...(react18
        ? [
            { find: /^react-dom(\/.*)?$/, replacement: here('./fixtures/react18/node_modules/react-dom') + '$1' },
            { find: /^react(\/.*)?$/, replacement: here('./fixtures/react18/node_modules/react') + '$1' },
          ]
        : []),
    ],
  },
  test: {
    include: ['core/test/**/*.test.ts', 'react/test/**/*.test.tsx', 'node/test/**/*.test.ts'],
  },
});
