import { cleanup, configure } from '@testing-library/react';
import { afterEach } from 'vitest';

// A machine busy with other work (CI shares two cores) can take more than the default second to
// render: a wait that runs out only then is not a failure of the app.
configure({ asyncUtilTimeout: 3000 });

afterEach(() => {
  cleanup();
  localStorage.clear();
  history.replaceState(null, '', '/');
});
