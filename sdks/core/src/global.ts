// The <script> build: `window.Gamify` is the class, so a page writes `new Gamify({ apiKey })`.
import { Gamify } from './index';

(globalThis as unknown as { Gamify: typeof Gamify }).Gamify = Gamify;
