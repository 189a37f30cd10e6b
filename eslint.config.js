// ESLint for a router tool: the type-checked rules that catch what hurts a long-running daemon
// (promises nobody awaits, switches that miss a case, conditions that are always the same,
// values of the wrong type in messages), and the project's own boundaries (external programs
// only through src/sys/exec.ts; no console in the libraries, which log through the logger or
// return what the commands print). Rules turned off, and why, are said where they are.
import js from '@eslint/js'
import globals from 'globals'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  {ignores: ['dist/**', 'node_modules/**']},
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {parserOptions: {projectService: true, tsconfigRootDir: import.meta.dirname}},
    linterOptions: {reportUnusedDisableDirectives: 'error'},
    rules: {
      // A `default:` is a deliberate answer for the values not listed (an errno we do not name).
      '@typescript-eslint/switch-exhaustiveness-check': ['error', {considerDefaultExhaustiveForUnions: true}],
      '@typescript-eslint/consistent-type-imports': ['error', {fixStyle: 'inline-type-imports'}],
      '@typescript-eslint/no-unused-vars': ['error', {argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none'}],
      // Numbers and booleans in messages are meant; objects and undefined are the bugs.
      '@typescript-eslint/restrict-template-expressions': ['error', {allowNumber: true, allowBoolean: true}],
      // An empty string (an environment variable set to '') means "not set": `||` is meant there.
      '@typescript-eslint/prefer-nullish-coalescing': ['error', {ignorePrimitives: {string: true}}],
      '@typescript-eslint/prefer-optional-chain': 'error',
      '@typescript-eslint/no-unnecessary-condition': 'error',
      '@typescript-eslint/prefer-readonly': 'error',
      '@typescript-eslint/return-await': ['error', 'in-try-catch'],
      eqeqeq: ['error', 'smart'],
    },
  },
  {
    // The libraries: no console (the daemon logs JSON lines through its logger; commands print),
    // and other programs only through the one execa wrapper, which types their failures.
    files: ['src/**/*.ts'],
    rules: {
      'no-console': 'error',
      'no-restricted-imports': [
        'error',
        {
          paths: [
            {name: 'execa', message: 'run programs through src/sys/exec.ts'},
            {name: 'node:child_process', message: 'run programs through src/sys/exec.ts'},
            {name: 'child_process', message: 'run programs through src/sys/exec.ts'},
          ],
        },
      ],
    },
  },
  {files: ['src/sys/exec.ts'], rules: {'no-restricted-imports': 'off'}},
  {
    // Tests read what outside tools print (tshark, nfdump, /metrics) through regular expressions
    // whose optional groups the types call certain, wait on flags that callbacks set, and fake
    // async interfaces with functions that need no await: these two rules only get in the way there.
    files: ['test/**/*.ts'],
    rules: {'@typescript-eslint/no-unnecessary-condition': 'off', '@typescript-eslint/require-await': 'off'},
  },
  {
    // Plain JavaScript (the CLI's entry points, configs) is not in the TypeScript project.
    files: ['**/*.js', '**/*.cjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {...tseslint.configs.disableTypeChecked.languageOptions, globals: globals.node},
  },
  {files: ['**/*.cjs'], languageOptions: {sourceType: 'commonjs', globals: globals.node}},
)
