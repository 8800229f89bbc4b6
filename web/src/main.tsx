import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App';
import { restoreFirstSendsCutOff } from './drafts';
import { applyStoredTheme } from './hooks/useTheme';
import './styles.css';

applyStoredTheme();
restoreFirstSendsCutOff();

const root = document.getElementById('root');
if (!root) throw new Error('index.html has no #root element');
createRoot(root).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
