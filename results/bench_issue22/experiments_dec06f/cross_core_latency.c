/* Latency of a line another core has just modified, against one this core
 * modified: a pointer chase over KB kilobytes (one 8-byte link a 64-byte
 * line, in a random cycle), read by thread 1 after thread 0 (or thread 1
 * itself) wrote every line.  gcc -O2 -fopenmp cross_core_latency.c -o lat &&
 * ./lat 256 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  size_t kb = argc>1? atol(argv[1]):256; size_t nl = kb*1024/64;
  uint64_t *buf = aligned_alloc(64, nl*64);
  uint32_t *perm = malloc(sizeof(uint32_t)*nl);
  for(size_t i=0;i<nl;i++) perm[i]=i; srand(1);
  for(size_t i=nl-1;i>0;i--){size_t j=rand()%(i+1);uint32_t t=perm[i];perm[i]=perm[j];perm[j]=t;}
  for(size_t i=0;i<nl;i++) buf[perm[i]*8] = perm[(i+1)%nl]*8;
  double tr=0,tl=0; int reps=100; uint64_t sink=0;
  #pragma omp parallel num_threads(2)
  {
    int id=omp_get_thread_num();
    for(int r=0;r<reps;r++){
      for(int mode=0;mode<2;mode++){
        #pragma omp barrier
        int writer = mode==1 ? 1 : 0;
        if(id==writer){ for(size_t i=0;i<nl;i++) buf[i*8+1]++; }
        #pragma omp barrier
        if(id==1){
          double t=now(); uint64_t p=perm[0]*8;
          for(size_t i=0;i<nl;i++) p=buf[p];
          t=now()-t; sink+=p;
          if(mode==0) tr+=t; else tl+=t;
        }
      }
    }
  }
  printf("%zu KB pointer chase: lines modified by the other core %.1f ns/line, by this core %.1f ns/line (%lu)\n", kb, tr/(nl*reps)*1e9, tl/(nl*reps)*1e9, (unsigned long)sink);
}
