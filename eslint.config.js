// ESLint for a router tool: the type-checked rules that catch what hurts a long-running daemon
// (promises nobody awaits, switches that miss a case, values of the wrong type in messages), and
// the project's own boundaries (external programs only through src/sys/exec.ts).
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config({ignores: ['dist/**', 'node_modules/**']}, js.configs.recommended, ...tseslint.configs.recommendedTypeChecked, {
  languageOptions: {parserOptions: {projectService: true, tsconfigRootDir: import.meta.dirname}},
  linterOptions: {reportUnusedDisableDirectives: 'error'},
  rules: {
    '@typescript-eslint/switch-exhaustiveness-check': 'error',
    '@typescript-eslint/consistent-type-imports': ['error', {fixStyle: 'inline-type-imports'}],
    '@typescript-eslint/no-unused-vars': ['error', {argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none'}],
    '@typescript-eslint/restrict-template-expressions': ['error', {allowNumber: true, allowBoolean: true}],
    '@typescript-eslint/prefer-nullish-coalescing': 'error',
    '@typescript-eslint/prefer-optional-chain': 'error',
    '@typescript-eslint/no-unnecessary-condition': 'error',
    '@typescript-eslint/prefer-readonly': 'error',
    '@typescript-eslint/return-await': ['error', 'in-try-catch'],
    eqeqeq: ['error', 'smart'],
    'no-console': 'error',
  },
})
