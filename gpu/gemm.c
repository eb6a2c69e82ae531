/* The one GEMM every CPU layer calls. With OpenBLAS (the normal build) it
 * is cblas_sgemm, which also does the threading. The GPU machines have no
 * OpenBLAS, and there the CPU backend only serves as the reference for
 * small parity checks, so a plain loop with the same contract is enough:
 * it is correct, not fast. */
#include "cpu.h"

#ifndef NN_NO_BLAS
#include <cblas.h>

void nn_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
	int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
	cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
		trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

#else

void nn_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
	int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
	for (int i = 0; i < m; i++) {
		float *ci = c + (size_t)i * ldc;
		for (int j = 0; j < n; j++)
			ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
		for (int p = 0; p < k; p++) {
			float av = alpha * (trans_a ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p]);
			if (trans_b)
				for (int j = 0; j < n; j++)
					ci[j] += av * b[(size_t)j * ldb + p];
			else
				for (int j = 0; j < n; j++)
					ci[j] += av * b[(size_t)p * ldb + j];
		}
	}
}

#endif
